"""Running trials: the jobs a loop hands out (``jobs``); the Ray Tune runner (``runner``), its Tune-side
classes (``tune_glue``), the Ray it starts or joins (``cluster``), trial deadlines (``watchdog``) and the
ASHA scheduler the loops pass it (``asha``); the trainable that runs one trial in a Ray worker
(``trainable``); DDP trials (``ddp``, each rank in ``ddp_rank``); and the trainer plug-ins (``trainers``),
with the built-in detector's adapter (``detector_trainer``) and the Ultralytics one (``ultralytics_trainer``,
its inputs and pre-flight checks in ``ultralytics_inputs``, its trainer class in ``ultralytics_trial``)."""
