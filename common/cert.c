/* cert: placeholder, being written. */
