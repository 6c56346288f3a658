"""``python -m emotionq.cli``: the ``emotionq`` command."""

from emotionq.cli import main

main()
