"""`docker save` archives: layer-sharing batches (`batching`), what a saved tar holds and
the chain that proves its images (`saved_tar`), and the manifest of the archives a
migration wrote (`manifest`)."""
