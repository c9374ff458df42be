"""PIRenderer as DreamTalk ships it."""
