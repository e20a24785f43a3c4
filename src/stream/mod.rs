//! Server-sent events: a parser and writer that survive arbitrary chunk boundaries.
