"""The stages every image goes through, shared by scan, eval, calibrate and train.

    entries ──► records ──► blocks ──► model batches ──► rows / predictions
    entries.py  records.py   batches.py  scoring.py        (pipeline.Scanner, eval.predict)
                (read, sha256, decode, notes, transform, preprocess: RecordBuilder)

Each stage is a plain function or callable with no knowledge of who runs it. Today
:mod:`forensix.stages.loader` runs the record builder in DataLoader workers (and survives a worker's
death); ``device_decode`` is the optional stage that decodes JPEGs on the model's device. Nothing
outside ``loader`` imports a DataLoader, so another runner (Ray Data) can call the same builder over
the same entries and feed the same scoring.
"""
