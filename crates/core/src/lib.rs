//! rookery-core (in progress).
