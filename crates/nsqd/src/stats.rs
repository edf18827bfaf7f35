//! Placeholder until `/stats` lands.
