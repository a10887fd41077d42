/* chain: placeholder, being written. */
