//! dead_letter (to be written)
