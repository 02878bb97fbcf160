//! The hopwatch network lab.
