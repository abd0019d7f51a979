"""Documents -> passages -> index: load, split, embed, index, update."""
