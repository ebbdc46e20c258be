"""Fuzzing forensix's readers of untrusted bytes (see docs/reliability.md).

Targets (:mod:`fuzz.targets`) state the property each reader keeps, whatever the bytes: one input
gives exactly one record or one counted skip, never an exception out of the stage, in bounded time
and memory. ``python -m fuzz TARGET`` runs one under atheris (coverage-guided libFuzzer), seeded
with Pillow's own test images (:mod:`fuzz.corpus`, fetched from the Pillow sdist, never committed).
Every crasher found is kept in ``fuzz/crashers/TARGET/`` and replayed by the test suite.
"""
