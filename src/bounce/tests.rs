//! Unit tests per format, on small hand-written messages.
