"""Job parts: what runs a flow as a Hydra job, between the command line and the flow: start-up
checks of a config (``startup_checks``), the config a checkpoint is scored with
(``restored_config``), Hydra's callbacks, ``--cfg`` showing a checkpoint's config
(``shown_config``), a failed job's record (``failures``), SLURM requeueing (``slurm``) and the
DDP guard (``ddp_job``). Every entry point uses them; they use the parts below."""
