"""The evolution loops: ``generational`` (a barrier per generation) and ``steady`` (async: a child bred the
moment a trial ends), siblings on one ``base``; ``plan`` validates a run before it starts and
``checkpoint`` holds the format both loops save and resume from; ``validation`` retrains the winners of
a finished run with new seeds, through the same trial runner."""
