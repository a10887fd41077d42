/* join: placeholder, being written. */
