# outrigger-init (owned by the init/ work; see init/README in HACKING.md)
