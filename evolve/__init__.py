"""Evolution of YOLO hyperparameters: search space, DEAP genetic algorithm, Ray Tune execution, records.

``evolve.run(config)`` is the main job; ``orchestrate.py`` is its command line.
"""
