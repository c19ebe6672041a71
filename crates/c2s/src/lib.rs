//! rookery-c2s (in progress).
