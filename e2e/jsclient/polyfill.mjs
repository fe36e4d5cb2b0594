// matrix-js-sdk 43 uses Promise.withResolvers, which Node has from version 22 on; the CI machine has Node 20. This
// module is imported first, so the SDK finds it in place.
if (typeof Promise.withResolvers !== "function") {
	Promise.withResolvers = function withResolvers() {
		let resolve, reject;
		const promise = new this((res, rej) => {
			resolve = res;
			reject = rej;
		});
		return { promise, resolve, reject };
	};
}
