"""`docker save` archives: layer-sharing batches (`batching`), what a saved tar holds and
the chain that proves its images (`saved_tar`), the manifest of the archives a migration
wrote (`manifest`), and writing them: a batch saved into its archive, the batch size cap,
the disk-room rule (`writing`)."""
