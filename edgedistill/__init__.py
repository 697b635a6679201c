"""The core: the dataset model, recipes, front ends, the bundle, model runtimes, the shard driver and
the labeler protocol. Stages (generators, labelers, trainers, exporters) share code only through here."""
