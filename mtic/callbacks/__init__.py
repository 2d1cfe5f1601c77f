"""Lightning callbacks of mtic runs, wired through conf/callbacks/ (each built from its `_target_`)."""
