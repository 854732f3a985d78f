# Unit tests (cmocka) for src/: one test_<module>.c per src/<module>.c.
