"""Coverage-guided fuzzing of fastpath's parsers (atheris), and the seed corpus they start from."""
