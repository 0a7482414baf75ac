"""Running trials: the jobs a loop hands out (``jobs``), the Ray Tune runner and its glue (``runner``,
``tune_glue``), the trainable that runs one trial in a Ray worker (``trainable``), DDP trials (``ddp``,
``ddp_rank``) and the trainer plug-ins (``trainers``, with the built-in detector's adapter in
``detector_trainer``)."""
