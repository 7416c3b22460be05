"""Training parts: the LightningModule, the Trainer and its plugins, callbacks, loggers,
optimizer and scheduler builders, a teacher's logits (``distillation``).
``mobilenet_lab.train`` puts them together."""
