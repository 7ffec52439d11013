"""textreid."""
