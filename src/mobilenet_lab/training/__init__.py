"""Training parts: the LightningModule, the Trainer and its plugins, callbacks, loggers,
optimizer and scheduler builders, and what makes a failed run fail alone (``failures``,
``ddp_job``). ``mobilenet_lab.train`` puts them together."""
