"""The Zarr store: the dataset contract, the chunk recorder and the region writer."""
