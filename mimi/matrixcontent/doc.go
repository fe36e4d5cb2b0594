// Package matrixcontent maps MIMI content messages (package mimi/content) to Matrix event
// content and back, as pure functions: whatever needs the bridge's state (message ID ↔
// event ID, MIMI user URI ↔ Matrix user ID) or I/O (re-hosting media) comes in as a
// function.
//
// Text: GFM-MIMI markdown becomes a Matrix message whose body is the markdown source and
// whose formatted_body is HTML from a small converter of the common subset (see
// renderMarkdown); Matrix HTML becomes GFM-MIMI markdown through the inverse converter, and
// a Matrix message without HTML becomes text/plain. MIMI text/html is sanitised to the
// Matrix subset. Replies, reactions, edits, deletes, unlikes, attachments (external parts)
// and mentions (links to MIMI user URIs ↔ m.mentions and matrix.to pills) map both ways.
package matrixcontent
