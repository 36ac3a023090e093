"""Input pipeline: node-local staging (staging.py), parallel HDF5 readers (readers.py) and tf.data (dataset.py).

Sharding (sharding.py) is shared by staging and the dataset, so a node stages exactly the files its ranks read.
"""
