"""clinica's migrations plus one that cannot apply to an old backup (test_drills): MIGRATION_MODULES
points clinica here in that test only."""
