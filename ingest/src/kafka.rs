//! kafka (to be written)
