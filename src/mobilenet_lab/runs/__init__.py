"""Run plumbing: run folders and Hydra callbacks, start-up checks of a config, the config a
checkpoint holds, run files, errors shown as one line, the configs' resolvers, SLURM
requeueing. Every entry point uses them."""
