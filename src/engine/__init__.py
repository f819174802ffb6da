"""Training engine: learning-rate schedules (``lr_schedule``), the loss (``loss``), optimizer parameter
groups and loss scaling (``optimizer``). Import the submodules directly; nothing is imported here."""
