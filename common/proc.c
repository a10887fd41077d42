/* proc: placeholder, being written. */
