//! logs (to be written)
