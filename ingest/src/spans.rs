//! spans (to be written)
