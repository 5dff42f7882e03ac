//! Prune report. OWNER: list helper.
