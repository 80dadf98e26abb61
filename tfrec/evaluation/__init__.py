"""Full-ranking evaluation of anything that maps histories to item scores."""
