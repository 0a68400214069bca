"""Files kept safe: atomic writes, paths under the data root, archives unpacked with limits."""
