"""The inspector's widgets. Each gets its data through its constructor or reactives and posts
past-tense messages upward; none looks at its siblings."""
