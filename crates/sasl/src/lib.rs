//! rookery-sasl (in progress).
