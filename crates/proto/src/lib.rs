//! rookery-proto (in progress).
