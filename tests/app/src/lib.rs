//! This package holds only the end-to-end suite in `tests/app/`.
