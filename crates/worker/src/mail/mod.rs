//! Email: rendering and delivery.
