"""Pure predicates and annotators over Documents: each answers keep or drop, and why."""
