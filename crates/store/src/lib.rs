//! rookery-store (in progress).
