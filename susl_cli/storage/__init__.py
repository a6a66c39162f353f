"""The only package that imports h5py: masked datasets and checkpoints on disk.

Every file carries a `kind`, a format version and the susl version that wrote it; readers
reject a mismatch with a sentence that says what was expected. Writes are atomic.
"""
