//! otlp_receiver (to be written)
