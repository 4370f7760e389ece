"""The flipped-format contract every stage imports: records and conditioning text (format), chat templates
(templates), flipped samples (samples), drafts (drafts), word counting (words), persona style (style) and
scope sentences (scope). Nothing here imports a stage."""
