"""Training engine: learning-rate schedules (``lr_schedule``), the loss (``loss``), optimizer parameter
groups and loss scaling (``optimizer``), the training loop (``trainer``), evaluation (``evaluate``),
metrics and plots (``metrics``, ``plots``), prediction (``predict``) and export (``export``).
Import the submodules directly; nothing is imported here."""
