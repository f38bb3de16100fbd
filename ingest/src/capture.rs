//! capture (to be written)
