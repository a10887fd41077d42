/* store: placeholder, being written. */
