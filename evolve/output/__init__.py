"""What a run leaves on disk and on the console: the records (``evolve.csv``, ``hyp_evolve.yaml``,
``evolve_population.yaml``), the run folder with its lock and checkpoint file, the plots, and the
progress line and log set-up of the console, and the records and plot of a winner validation
(``validation.csv``, ``validation_summary.csv``, ``hyp_validated.yaml``, ``validation.png``)."""
